"""The weight-sharing network and its static building blocks."""
