"""Learned baselines: training and evaluation scripts (CleanRL style, one file each)."""
