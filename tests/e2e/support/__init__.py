"""Helpers shared by the end-to-end tests and the benchmark (``bench/run``).

``storage``: generated storage trees and the tree a client must see;
``pancbt``: an independent pancbt writer and naive merge reference;
``server``: start ``recovery-fs serve`` and check it with a raw RPC NULL.
None of them imports the code under test.
"""
