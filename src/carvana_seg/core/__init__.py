"""What training, inference and reporting share, imported from below by all three:
experiment folders (`paths`), the OOF file format (`oof`), the competition metric
(`metrics`), per-view prediction (`views`) and loading an experiment's models (`experiment`).
Nothing here imports training/, inference/, recipe/ or reporting/.
"""
