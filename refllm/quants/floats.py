"""(being written)"""

FORMATS = []
