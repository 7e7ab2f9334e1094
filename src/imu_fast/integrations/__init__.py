"""Thin adapters that run IMU inside other training frameworks.

- ``imu_fast.integrations.huggingface``: ``IMUTrainer`` (and ``NPOTrainer``), ``transformers.Trainer``
  subclasses whose loss is unlearning on the train dataset (the forget set), with ``IMUCallback``
  for weight refresh and forget-set stop criteria.
- ``imu_fast.integrations.open_unlearning``: the ``IMU`` method for open-unlearning's trainer
  registry, and its trainer config (``IMU.yaml``).

Each adapter imports its host framework only when one of its classes is first used, so
``import imu_fast`` never needs transformers or open-unlearning; a missing host is an ImportError
that names what to install. The influence scores, weights and loss are the package's own
(``influence_scores``, ``influence_weights``, ``dynamic_batch_weights``, ``imu_loss``); the
adapters only carry forget-set indices through the host's data pipeline and call them.
"""
