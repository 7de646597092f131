"""The floor everything stands on: tensor kernels (`kernels`), the competition metric
(`metrics`), masks as runs and their RLE (`rle`), the paired bootstrap over groups
(`bootstrap`) and the host-memory setting (`host_memory`). Imports nothing of the project's
above `errors`.
"""
