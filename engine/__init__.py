"""mergelab's engine: checkpoints, flat task vectors, merge methods and evaluation. No Streamlit here.

THP_MEM_ALLOC_ENABLE asks PyTorch's CPU allocator to back large tensors with transparent huge
pages; a fresh merged vector then costs 512× fewer page faults (bench/merge_bandwidth.py: the
ViT-B/32 merge went from 2.1× to 1.3× the bandwidth bound). It only takes effect if set before
torch allocates, so the Makefile exports it too.
"""
import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
