"""The studio console: accounts, a browser UI and a JSON API that submit jobs into the spool and follow them."""
