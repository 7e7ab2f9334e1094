"""Triton kernels, shipped inside the wheel as ``imu_fast.kernels``.

Importing a module here imports Triton; callers import lazily so ``import imu_fast`` never needs it.
Kernels avoid ``tl.make_block_ptr`` (removed in Triton 3.9) and ``x ** 2`` (unsupported by the
interpreter), so they run on Triton 3.6-3.9 and under ``TRITON_INTERPRET=1`` on CPU.
"""
