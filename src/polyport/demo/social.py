"""The guide's social-platform shape, on the demo service: users, posts, comments.

Imported by :mod:`polyport.demo.shop` so that one service carries both examples.
"""
