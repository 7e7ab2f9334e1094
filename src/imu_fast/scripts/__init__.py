"""What the ``imu-fast unlearn`` and ``imu-fast influence`` commands do: read a model and a forget
file, run the library, write the results. Every problem with a file is a ``BadFile`` naming it."""
