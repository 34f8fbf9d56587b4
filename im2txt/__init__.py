"""im2txt: the binaries, and the shared contracts (configuration, vocabulary, records, files)."""
