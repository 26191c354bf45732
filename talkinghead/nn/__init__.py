"""Network building blocks shared by the methods (SyncNet, encoders, generators, discriminators, losses).

Import the module you need, e.g. ``from talkinghead.nn.syncnet import SyncNet``; this package
imports nothing itself, so each block loads only what it uses.
"""
