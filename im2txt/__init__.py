"""im2txt: the binaries, and the shared contracts (configuration, vocabulary, records, files).

Importing the package imports TensorFlow without its known-harmless start-up lines (quiet_start).
"""

from im2txt import quiet_start

quiet_start.import_tensorflow()
