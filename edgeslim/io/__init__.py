"""Loading users' models (Keras 3 bridge, safe loading) and data sets."""
