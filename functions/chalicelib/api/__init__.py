"""HTTP adapters: parse and validate requests, call the services, render responses and problems."""
