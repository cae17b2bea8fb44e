"""Dataset access: clips of every layout (`readers`), labels, decoding, window placement and pixel conventions."""
