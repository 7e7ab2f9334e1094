"""Unlearning methods behind ``imu_fast.unlearn``."""
