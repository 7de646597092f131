"""An experiment's files, one owner for every path: its folders and saved config (`paths`),
loading its fold models (`experiment`), the OOF file format (`oof`) and the TTA OOF it
predicts on demand for tuning (`tta_oof`).
"""
