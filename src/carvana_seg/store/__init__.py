"""An experiment's files, one owner for every path: every file's name and the saved config
(`paths`), loading its fold models and checking that a recipe's members match their runs
(`experiment`), the OOF file format and an experiment's whole OOF (`oof`), and the TTA OOF it
predicts on demand for tuning (`tta_oof`).
"""
