"""
C{python -m netdemo}: the same as the C{netdemo} command.
"""

from netdemo.cli import main

main()
