"""The public event feed and its relays to streaming engines."""
