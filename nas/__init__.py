"""PoseNAS: neural architecture search for multi-person 2D pose estimation (jobs layer)."""
