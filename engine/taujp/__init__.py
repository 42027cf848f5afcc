"""τJp: the interference matrix, the Jacobian-vector product cache, and the tangent-space preview."""
