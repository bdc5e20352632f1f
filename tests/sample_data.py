"""Small hand-written training data shared by the training tests."""

TEXTS = [
    "A man is playing a guitar on the street.",
    "Two dogs run across a snowy field.",
    "The stock market fell sharply on Monday.",
    "She bakes bread every Sunday morning.",
    "The train to Paris leaves at noon.",
    "Children are building a sandcastle.",
    "Rain is expected for the whole week.",
    "He repaired the old bicycle himself.",
]
TRIPLETS = [  # (query, positive, negative)
    ("A man plays guitar.", "Someone makes music.", "Nobody plays."),
    ("Two dogs run in snow.", "Animals are outside.", "Cats sleep."),
    ("A woman reads a book.", "A person is reading.", "She swims."),
    ("Kids play football.", "Children play a game.", "Kids sleep."),
    ("A chef cooks pasta.", "Food is being made.", "The chef naps."),
    ("A car drives fast.", "A vehicle is moving.", "The car is parked."),
]
