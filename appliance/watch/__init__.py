"""The watch-folder daemon: inbox/ drops become jobs run once each in a supervised worker."""
