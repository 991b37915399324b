"""``python -m serving.modelserver --port=8500 --rest_api_port=8501 --model_name=... ...``"""

import sys

from serving.modelserver.server import main

if __name__ == "__main__":
    sys.exit(main())
