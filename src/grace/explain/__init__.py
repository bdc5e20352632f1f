"""Why two texts are close: exact token attributions of a cosine, and their rendering."""
