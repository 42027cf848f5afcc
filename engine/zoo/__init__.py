"""Demo zoo: generators and real-image sources for the tiny CLIP task-arithmetic zoo."""
