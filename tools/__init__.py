"""Developer tools: doc generators and check harnesses (not installed with the package)."""
