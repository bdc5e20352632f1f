"""The backbone and what surrounds it: loading, the chat prompt, masked mean pooling, token
log-probs, the weights fingerprint. It knows nothing of rollouts, training or encoders.

May import: errors.
"""
