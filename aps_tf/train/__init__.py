"""Retraining the searched architecture (docs/method.md#picking-and-retraining).

`trainer.train(cfg, arch_path, workdir)` builds the dense child from an
architecture file and trains it on 'full_train' under cfg.strategy, with
checkpoint/resume, TensorBoard summaries and a final 'test' evaluation.
Binary: `python -m aps_tf.train --config=configs/NAME.py --arch=A --workdir=D`.
"""
