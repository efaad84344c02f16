"""accmon.tui"""
