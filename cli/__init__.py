"""The ``uhr`` command line: :mod:`cli.main` is the group, one module per domain holds its commands.

Commands are thin (parse the arguments, call one library function, print); every module imports
only ``click`` at module level, so ``uhr --help`` stays fast.
"""
