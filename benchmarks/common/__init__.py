"""What several kinds of benchmark share: the repo's paths (paths.py) and the machine line and results-file sections (report.py); imports no other benchmark folder."""
