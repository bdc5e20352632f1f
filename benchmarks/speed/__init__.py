"""Speed and memory benchmarks (rollouts, training steps, encoding, profiles, anchors); each writes its section of results-speed.md beside it."""
