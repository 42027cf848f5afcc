"""STA (selective task arithmetic): importance maps, their uint8 codes, and their statistics."""
