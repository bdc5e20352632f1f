"""Reading training data: files, gensim test files, hub datasets; errors name FILE:LINE and field."""
