"""What people run: the `rgnet-hf` command line ([`cli`]), the web app ([`web_app`]), the demo and timeline pictures.

Nothing here is imported by the package itself: each app imports what it needs when it starts.
"""
