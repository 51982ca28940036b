"""The guide's payment flow, on the demo service: a payment provider that calls back.

Imported by :mod:`polyport.demo.shop` so that one service carries both examples.
"""
