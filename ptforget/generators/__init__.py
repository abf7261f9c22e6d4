"""Generator families: Gaussian mixture, mixture-density network, normalizing flow."""

from ptforget.generators.base import Generator
from ptforget.generators.flow import Flow
from ptforget.generators.mdn import MixtureDensityNetwork
from ptforget.generators.mixture import GaussianMixture

__all__ = ["Flow", "GaussianMixture", "Generator", "MixtureDensityNetwork"]
