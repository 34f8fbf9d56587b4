"""The Apache Beam jobs. Importing the package imports TensorFlow as im2txt does, without its
known-harmless start-up lines (im2txt/quiet_start.py)."""

import im2txt  # pylint: disable=unused-import
