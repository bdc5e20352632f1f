"""Reading training data (files, gensim test files, hub datasets; errors name FILE:LINE and
field), and the length-sorted order in which inference loops run texts.

May import: config, errors.
(config, in the same layer: the training modes a record is read for.)
"""
