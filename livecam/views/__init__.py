"""HTTP views: the per-camera Blueprint and the dashboard."""
