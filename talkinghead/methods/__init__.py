"""Training methods, one sub-package each (networks, LightningModule, official checkpoint import).

Import the method you need, e.g. ``from talkinghead.methods.syncnet import train``; this package
imports nothing itself, so a method's dependencies load only when it is used.
"""
