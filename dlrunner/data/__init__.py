"""Data sets: each module turns a source into a DataBundle of train/val/test splits."""
