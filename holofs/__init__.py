"""holofs: RCC holotree environments as lazy virtual trees and fast eager restores."""

__version__ = "0.1.0"
