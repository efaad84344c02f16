"""Runnable training scripts, healthy and faulty, that a person can try: `accmon demo --list`.

Each is a plain script (`python demos/NAME.py`); run it under `accmon run` to watch it, or through
`accmon demo NAME`. The table of which alert each should raise is in demos/README.md.
"""
