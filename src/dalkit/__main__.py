import sys

try:  # Ctrl-C while torch is still importing: one line, not a traceback
    from dalkit.cli import main
except KeyboardInterrupt:
    print("dalkit: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
