"""Reproducible studies behind ``imu-fast bench <study>``; each module has add_arguments and run."""
