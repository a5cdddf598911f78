"""Countries as people write them: ISO codes, ISO names, and the names UNESCO and UN documents use.

No fuzzy matching: a wrong country is worse than a refusal ("Republic of Korea" must never become
the other Korea). Case, accents, spacing and "the" are the only things folded away.
"""

from __future__ import annotations

import pycountry

from domain.cities import normalise_name
from domain.errors import InvalidInput

# The 193 member states and the 2 observer states, as the UN's M49 and UNESCO's documents name them.
UN_NAMES: dict[str, str] = {
    "Afghanistan": "AF", "Albania": "AL", "Algeria": "DZ", "Andorra": "AD", "Angola": "AO",
    "Antigua and Barbuda": "AG", "Argentina": "AR", "Armenia": "AM", "Australia": "AU",
    "Austria": "AT", "Azerbaijan": "AZ", "Bahamas": "BS", "Bahrain": "BH", "Bangladesh": "BD",
    "Barbados": "BB", "Belarus": "BY", "Belgium": "BE", "Belize": "BZ", "Benin": "BJ",
    "Bhutan": "BT", "Bolivia (Plurinational State of)": "BO", "Bosnia and Herzegovina": "BA",
    "Botswana": "BW", "Brazil": "BR", "Brunei Darussalam": "BN", "Bulgaria": "BG",
    "Burkina Faso": "BF", "Burundi": "BI", "Cabo Verde": "CV", "Cambodia": "KH",
    "Cameroon": "CM", "Canada": "CA", "Central African Republic": "CF", "Chad": "TD",
    "Chile": "CL", "China": "CN", "Colombia": "CO", "Comoros": "KM", "Congo": "CG",
    "Costa Rica": "CR", "Côte d'Ivoire": "CI", "Croatia": "HR", "Cuba": "CU", "Cyprus": "CY",
    "Czechia": "CZ", "Democratic People's Republic of Korea": "KP",
    "Democratic Republic of the Congo": "CD", "Denmark": "DK", "Djibouti": "DJ",
    "Dominica": "DM", "Dominican Republic": "DO", "Ecuador": "EC", "Egypt": "EG",
    "El Salvador": "SV", "Equatorial Guinea": "GQ", "Eritrea": "ER", "Estonia": "EE",
    "Eswatini": "SZ", "Ethiopia": "ET", "Fiji": "FJ", "Finland": "FI", "France": "FR",
    "Gabon": "GA", "Gambia": "GM", "Georgia": "GE", "Germany": "DE", "Ghana": "GH",
    "Greece": "GR", "Grenada": "GD", "Guatemala": "GT", "Guinea": "GN", "Guinea-Bissau": "GW",
    "Guyana": "GY", "Haiti": "HT", "Honduras": "HN", "Hungary": "HU", "Iceland": "IS",
    "India": "IN", "Indonesia": "ID", "Iran (Islamic Republic of)": "IR", "Iraq": "IQ",
    "Ireland": "IE", "Israel": "IL", "Italy": "IT", "Jamaica": "JM", "Japan": "JP",
    "Jordan": "JO", "Kazakhstan": "KZ", "Kenya": "KE", "Kiribati": "KI", "Kuwait": "KW",
    "Kyrgyzstan": "KG", "Lao People's Democratic Republic": "LA", "Latvia": "LV",
    "Lebanon": "LB", "Lesotho": "LS", "Liberia": "LR", "Libya": "LY", "Liechtenstein": "LI",
    "Lithuania": "LT", "Luxembourg": "LU", "Madagascar": "MG", "Malawi": "MW",
    "Malaysia": "MY", "Maldives": "MV", "Mali": "ML", "Malta": "MT", "Marshall Islands": "MH",
    "Mauritania": "MR", "Mauritius": "MU", "Mexico": "MX",
    "Micronesia (Federated States of)": "FM", "Monaco": "MC", "Mongolia": "MN",
    "Montenegro": "ME", "Morocco": "MA", "Mozambique": "MZ", "Myanmar": "MM", "Namibia": "NA",
    "Nauru": "NR", "Nepal": "NP", "Netherlands (Kingdom of the)": "NL", "New Zealand": "NZ",
    "Nicaragua": "NI", "Niger": "NE", "Nigeria": "NG", "North Macedonia": "MK", "Norway": "NO",
    "Oman": "OM", "Pakistan": "PK", "Palau": "PW", "Panama": "PA", "Papua New Guinea": "PG",
    "Paraguay": "PY", "Peru": "PE", "Philippines": "PH", "Poland": "PL", "Portugal": "PT",
    "Qatar": "QA", "Republic of Korea": "KR", "Republic of Moldova": "MD", "Romania": "RO",
    "Russian Federation": "RU", "Rwanda": "RW", "Saint Kitts and Nevis": "KN",
    "Saint Lucia": "LC", "Saint Vincent and the Grenadines": "VC", "Samoa": "WS",
    "San Marino": "SM", "Sao Tome and Principe": "ST", "Saudi Arabia": "SA", "Senegal": "SN",
    "Serbia": "RS", "Seychelles": "SC", "Sierra Leone": "SL", "Singapore": "SG",
    "Slovakia": "SK", "Slovenia": "SI", "Solomon Islands": "SB", "Somalia": "SO",
    "South Africa": "ZA", "South Sudan": "SS", "Spain": "ES", "Sri Lanka": "LK",
    "Sudan": "SD", "Suriname": "SR", "Sweden": "SE", "Switzerland": "CH",
    "Syrian Arab Republic": "SY", "Tajikistan": "TJ", "Thailand": "TH", "Timor-Leste": "TL",
    "Togo": "TG", "Tonga": "TO", "Trinidad and Tobago": "TT", "Tunisia": "TN", "Türkiye": "TR",
    "Turkmenistan": "TM", "Tuvalu": "TV", "Uganda": "UG", "Ukraine": "UA",
    "United Arab Emirates": "AE",
    "United Kingdom of Great Britain and Northern Ireland": "GB",
    "United Republic of Tanzania": "TZ", "United States of America": "US", "Uruguay": "UY",
    "Uzbekistan": "UZ", "Vanuatu": "VU", "Venezuela (Bolivarian Republic of)": "VE",
    "Viet Nam": "VN", "Yemen": "YE", "Zambia": "ZM", "Zimbabwe": "ZW",
    # observer states
    "Holy See": "VA", "State of Palestine": "PS",
}

# Earlier UN and UNESCO spellings still found in older documents.
FORMER_NAMES: dict[str, str] = {
    "Turkey": "TR", "Czech Republic": "CZ", "Swaziland": "SZ", "The former Yugoslav Republic "
    "of Macedonia": "MK", "Cape Verde": "CV", "Netherlands": "NL",
}


def _fold(name: str) -> str:
    """Folded as city names are, a typographic apostrophe as a plain one, without "the"."""
    folded = normalise_name(name.replace("\u2019", "'"))
    return folded.removeprefix("the ")


def _table() -> dict[str, str]:
    """Every accepted spelling, folded; a spelling that would name two countries is left out."""
    seen: dict[str, set[str]] = {}

    def add(name: str | None, code: str) -> None:
        if name:
            seen.setdefault(_fold(name), set()).add(code)

    for country in pycountry.countries:
        for attribute in ("name", "official_name", "common_name"):
            add(getattr(country, attribute, None), country.alpha_2)
    for name, code in {**UN_NAMES, **FORMER_NAMES}.items():
        add(name, code)
    return {name: next(iter(codes)) for name, codes in seen.items() if len(codes) == 1}


_BY_NAME = _table()


def country_code(text: str, field: str = "country") -> str:
    """The ISO 3166-1 alpha-2 code of a country given by code (alpha-2 or alpha-3) or name."""
    given = " ".join(text.split())
    if len(given) in (2, 3) and given.isalpha():
        upper = given.upper()
        found = (pycountry.countries.get(alpha_2=upper) if len(upper) == 2
                 else pycountry.countries.get(alpha_3=upper))
        if found is not None:
            return str(found.alpha_2)
    if given and (named := _BY_NAME.get(_fold(given))):
        return named
    raise InvalidInput(f"unknown country {text!r}: give an ISO code or the name as the UN "
                       "writes it", field=field)
