"""The library feature: templates, audio (and its groups) and assets uploaded by an account.
``store`` holds the queries and state changes (they only flush); ``actors`` the dramatiq
actors that validate, extract and probe what was uploaded."""
