"""The deployment API as a Django project (plain views, async views, Django REST framework)."""
