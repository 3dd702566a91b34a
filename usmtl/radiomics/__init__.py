"""The radiomics baseline: PyRadiomics features, Boruta selection, random forest."""
