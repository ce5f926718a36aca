"""Layer 1, formats: reading what files contain, never running any of it.

``files`` (opening planted files without blocking), ``archive`` (one reading of a torch zip), ``pickle_scan`` (the
symbolic pickle machine), ``records`` (inert stand-ins a secure load returns), ``text`` (AutoGluon's version.txt /
metadata.json).  May import: ``core``.
"""
