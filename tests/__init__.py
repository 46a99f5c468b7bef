"""
Tests for netdemo.
"""
