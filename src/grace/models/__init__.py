"""The backbone and what surrounds it: loading, the chat prompt, masked mean pooling."""
